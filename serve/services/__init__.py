"""One plain class per API area, each with its dependencies passed in.

The Serve ingress (``serve/ingress.py``) builds them once per replica and its endpoints
only call them and turn what they return into HTTP (status, headers, SSE): the logic
of an API lives here, where unit tests drive it with the shared fakes of
``tests/support/fakes.py`` (no Ray, no HTTP).

- :class:`~serve.services.chat.ChatService`: chat and text completions, ``auto``
  routing's dry run, and retrieval-augmented chat as one step of a chat request;
- :class:`~serve.services.responses.ResponsesService`: the OpenAI Responses API, answered
  through the chat service (``responses_convert``, ``responses_stream``), stored in the
  job store;
- :class:`~serve.services.messages.MessagesService`: the Anthropic Messages API, answered
  through the chat service (``messages_convert``, ``messages_stream``);
- :class:`~serve.services.embeddings.EmbeddingsService`: ``/v1/embeddings``, and
  :class:`~serve.services.rerank.RerankService`: ``/v1/rerank`` over it;
- :class:`~serve.services.extraction.ExtractionService`: ``/v1/extract`` and its batch;
- :class:`~serve.services.collections.CollectionsService`: ``/v1/collections``;
- :class:`~serve.services.models.ModelsService`: ``/v1/models``, sleep and wake, readiness;
- :class:`~serve.services.batches.BatchesService`: ``/v1/files`` and ``/v1/batches``, and
  :class:`~serve.services.batch_runner.BatchRunner`, which answers a batch's lines through
  the services above in the ingress's background.
"""
