"""``python -m serve bench index``: embeddings and vector search, each beside its baseline.

1. Embedding throughput through the graph (``POST /v1/embeddings`` on a running graph,
   several clients at once so the deployment's ``@serve.batch`` can merge them) against
   sentence-transformers called directly in this process on the very same batches, one
   after the other in the same run.
2. The index's own search time (query already embedded) for exact (flat) and HNSW
   indexes at each size, and HNSW recall@10 against exact search. Vectors: real
   all-MiniLM-L6-v2 embeddings of varied sentences, spread into the requested count by
   small random perturbations (embedding 100k real texts would take this machine
   minutes and measure the encoder, not the index); queries are fresh perturbations.
3. End-to-end ``POST /v1/collections/{c}/search`` latency over HTTP, on a collection of
   the same size ingested through the graph.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from serve.bench.meta import require_loopback, save_results
from serve.bench.stats import percentile

SUBJECTS = ["The team", "Our customer", "The new intern", "A nurse", "The pipeline", "The warehouse robot", "My neighbour",
            "The council", "A startup", "The orchestra", "The compiler", "A farmer", "The museum", "The satellite"]
VERBS = ["reviewed", "cancelled", "celebrated", "debugged", "painted", "shipped", "measured", "translated", "repaired",
         "forecast", "audited", "planted", "rehearsed", "optimised"]
OBJECTS = ["the quarterly budget", "a broken kettle", "the holiday schedule", "three thousand invoices", "the wheat harvest",
           "a jazz concert", "the GPU cluster", "an old lighthouse", "the tax return", "a marathon route",
           "the vaccine trial", "a chess opening", "the river bridge", "customer churn"]
PLACES = ["in Pune", "before lunch", "after the storm", "in the basement", "over the weekend", "at the harbour",
          "during the outage", "in March", "with a spreadsheet", "for the first time"]


def sentences(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} (note {i})." for i in range(n)]


def embedding_throughput(url: str, encoder, model_id: str, *, batches: int, batch_size: int, clients: int,
                         api_key: Optional[str], rounds: int) -> dict[str, Any]:
    """Texts/s through /v1/embeddings against the encoder in process, same batches.

    The two alternate for ``rounds`` rounds (direct, graph, direct, graph, ...), so a
    noisy neighbour on a shared machine hits both; the medians are compared.
    """
    import httpx

    texts = sentences(batches * batch_size, seed=11)
    chunks = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    direct_rates, graph_rates = [], []
    with httpx.Client(base_url=url, headers=headers, timeout=300, limits=httpx.Limits(max_connections=clients * 2)) as client:
        def send(chunk: list[str]) -> int:
            # base64, as the official openai client asks for by default: no float lists in JSON.
            response = client.post("/v1/embeddings", json={"model": model_id, "input": chunk, "encoding_format": "base64"})
            response.raise_for_status()
            vectors = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in response.json()["data"]]
            return len(vectors)

        encoder.encode(chunks[0])  # warm-up, both paths
        send(chunks[0])
        for _ in range(rounds):
            started = time.perf_counter()
            for chunk in chunks:
                encoder.encode(chunk)
            direct_rates.append(len(texts) / (time.perf_counter() - started))
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                done = sum(pool.map(send, chunks))
            graph_rates.append(len(texts) / (time.perf_counter() - started))
            assert done == len(texts)
    direct, graph = statistics.median(direct_rates), statistics.median(graph_rates)
    return {"texts_per_round": len(texts), "batch_size": batch_size, "clients": clients, "rounds": rounds,
            "direct_texts_per_s": round(direct, 1), "graph_texts_per_s": round(graph, 1), "ratio": round(graph / direct, 3),
            "direct_rounds": [round(r, 1) for r in direct_rates], "graph_rounds": [round(r, 1) for r in graph_rates]}


def synthetic_vectors(base: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(0, len(base), n)]
    vectors = picks + rng.normal(scale=noise / np.sqrt(base.shape[1]), size=picks.shape).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def index_search(base: np.ndarray, size: int, *, queries: int, params, noise: float) -> dict[str, Any]:
    """Search p50/p99 for flat and HNSW over ``size`` vectors, and HNSW recall@10."""
    from deployments.collections.index import VectorIndex

    vectors = synthetic_vectors(base, size, noise, seed=size)
    probe = synthetic_vectors(base, queries, noise, seed=size + 1)
    ids = np.arange(size, dtype=np.int64)
    out: dict[str, Any] = {"vectors": size, "queries": queries}
    found: dict[str, list[np.ndarray]] = {}
    for kind in ("flat", "hnsw"):
        started = time.perf_counter()
        index = VectorIndex(params, kind=kind)
        index.add(ids, vectors)
        build_s = time.perf_counter() - started
        index.search(probe[0], 10)
        latencies, results = [], []
        for query in probe:
            t0 = time.perf_counter()
            _, hit_ids = index.search(query, 10)
            latencies.append((time.perf_counter() - t0) * 1000)
            results.append(hit_ids)
        found[kind] = results
        out[kind] = {"build_s": round(build_s, 2), "p50_ms": round(statistics.median(latencies), 3),
                     "p99_ms": round(percentile(latencies, 0.99), 3)}
    recall = [len(set(h.tolist()) & set(e.tolist())) / max(len(e), 1) for h, e in zip(found["hnsw"], found["flat"])]
    out["hnsw"]["recall_at_10"] = round(float(np.mean(recall)), 4)
    return out


def http_search(url: str, size: int, *, queries: int, api_key: Optional[str], batch: int = 256) -> dict[str, Any]:
    """Ingest ``size`` sentences into a fresh collection, then time /search over HTTP."""
    import httpx

    name = f"bench-{size}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    texts = sentences(size, seed=size)
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        client.delete(f"/v1/collections/{name}")
        started = time.perf_counter()
        for start in range(0, size, batch):
            docs = [{"id": f"s{start + i}", "text": t, "metadata": {"n": start + i}} for i, t in enumerate(texts[start:start + batch])]
            client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).raise_for_status()
        ingest_s = time.perf_counter() - started
        probes = sentences(queries, seed=size + 99)
        client.post(f"/v1/collections/{name}/search", json={"query": probes[0], "k": 10}).raise_for_status()
        latencies = []
        for query in probes:
            t0 = time.perf_counter()
            client.post(f"/v1/collections/{name}/search", json={"query": query, "k": 10}).raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)
        stats = client.get(f"/v1/collections/{name}").json()
        client.delete(f"/v1/collections/{name}")
    return {"documents": size, "index": stats.get("index"), "ingest_s": round(ingest_s, 1),
            "ingest_docs_per_s": round(size / ingest_s, 1), "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2)}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = results.get("backends")
    fig, axes = plt.subplots(1, 4 if backends else 3, figsize=(20 if backends else 15, 4.8))
    emb = results.get("embeddings")
    if emb:
        axes[0].bar(["sentence-transformers\nin process", "graph\n/v1/embeddings"], [emb["direct_texts_per_s"], emb["graph_texts_per_s"]], color=["tab:grey", "tab:blue"])
        axes[0].set(title=f"embedding throughput (ratio {emb['ratio']:.2f})", ylabel="texts/s")
    sizes = [r["vectors"] for r in results["search"]]
    for kind, color in (("flat", "tab:grey"), ("hnsw", "tab:green")):
        axes[1].plot(sizes, [r[kind]["p50_ms"] for r in results["search"]], "o-", color=color, label=f"{kind} p50")
        axes[1].plot(sizes, [r[kind]["p99_ms"] for r in results["search"]], "o--", color=color, label=f"{kind} p99")
    for r in results.get("http", []):
        axes[1].plot([r["documents"]], [r["p50_ms"]], "s", color="tab:red", label=f"HTTP /search p50 ({r['documents']:,})")
    axes[1].axhline(5, color="black", linestyle=":", linewidth=1)
    axes[1].set(xscale="log", yscale="log", title="search latency (query embedded) vs HTTP", xlabel="vectors", ylabel="ms")
    axes[1].legend(fontsize=7)
    axes[2].bar([f"{s:,}" for s in sizes], [r["hnsw"]["recall_at_10"] for r in results["search"]], color="tab:green")
    axes[2].axhline(0.95, color="black", linestyle=":", linewidth=1)
    axes[2].set(ylim=(0.8, 1.0), title="HNSW recall@10 vs exact", xlabel="vectors")
    if backends:
        rows = backends.get("sizes", [])
        for name, color in (("embedded", "tab:grey"), ("postgres", "tab:purple")):
            for label, style in (("search", "o-"), ("filtered", "s--")):
                axes[3].plot([r["documents"] for r in rows], [r[name][label]["p50_ms"] for r in rows], style, color=color,
                             label=f"{name} {label} p50 (store)")
                over_http = backends.get("http", {}).get("sizes", [])
                axes[3].plot([r["documents"] for r in over_http], [r[name][label]["p50_ms"] for r in over_http],
                             style[0] + ":", color=color, alpha=0.6, label=f"{name} {label} p50 (HTTP)")
        axes[3].set(xscale="log", yscale="log", title="collections search p50, store and HTTP (recall in the JSON)",
                    xlabel="documents", ylabel="ms")
        axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    """Entry point for ``python -m serve bench index``."""
    from deployments.embedder.encoder import SentenceTransformerEncoder
    from deployments.collections.index import IndexParams
    from serve.kernel.sources import resolve_source
    from serve.kernel.config import load_profile
    from serve.kernel.settings import load_settings

    # Ray runs every replica at niceness 15 (RAY_worker_niceness). The bench runs at
    # the same niceness, so neither path is favoured: at 0 its own HTTP client would
    # preempt the server it measures, and the in-process baseline would look better.
    target = load_settings().ray_worker_niceness
    os.nice(max(0, target - os.nice(0)))
    profile = load_profile(args.profile)
    spec, coll = profile.embedder, profile.collections
    encoder = SentenceTransformerEncoder(resolve_source(spec.source, cache_dir=load_settings().cache_dir),
                                         normalize=True, device=spec.device or "cpu")
    results: dict[str, Any] = {"profile": profile.name, "sizes": args.sizes, "niceness": os.nice(0)}
    if args.url:
        require_loopback(args.url, "index")
        results["embeddings"] = embedding_throughput(args.url, encoder, spec.model_id, batches=args.batches,
                                                     batch_size=args.batch_size, clients=args.clients, api_key=args.api_key,
                                                     rounds=args.rounds)
        print(f"embeddings: direct {results['embeddings']['direct_texts_per_s']} texts/s, graph "
              f"{results['embeddings']['graph_texts_per_s']} texts/s, ratio {results['embeddings']['ratio']}")
    base = encoder.encode(sentences(args.base_texts, seed=3))
    params = IndexParams.from_spec(coll, spec.dimensions)
    results["index_params"] = {"hnsw_m": coll.hnsw_m, "ef_construction": coll.hnsw_ef_construction, "ef_search": coll.hnsw_ef_search}
    results["search"] = []
    for size in args.sizes:
        row = index_search(base, size, queries=args.queries, params=params, noise=args.noise)
        results["search"].append(row)
        print(f"{size:>7} vectors: flat p50 {row['flat']['p50_ms']} ms p99 {row['flat']['p99_ms']} ms | "
              f"hnsw p50 {row['hnsw']['p50_ms']} ms p99 {row['hnsw']['p99_ms']} ms recall@10 {row['hnsw']['recall_at_10']} "
              f"(build {row['hnsw']['build_s']} s)")
    if args.backends:
        from serve.bench.backends import compare, summary

        rows = []
        for size in args.sizes:
            row = compare(synthetic_vectors(base, size, args.noise, seed=size),
                          synthetic_vectors(base, args.queries, args.noise, seed=size + 1), params,
                          postgres_url=args.postgres_url)
            rows.append(row)
            print(f"{size:>7} documents: " + " | ".join(
                f"{b} ingest {row[b]['ingest_docs_per_s']}/s search p50 {row[b]['search']['p50_ms']} ms "
                f"p99 {row[b]['search']['p99_ms']} ms recall {row[b]['search']['recall_at_10']}, filtered p50 "
                f"{row[b]['filtered']['p50_ms']} ms recall {row[b]['filtered']['recall_at_10']}" for b in ("embedded", "postgres")))
        results["backends"] = {"sizes": rows, "postgres_vs_embedded": summary(rows)}
    if args.http_backends:
        from serve.bench.http_backends import compare_over_http

        def on_embedded_graph(url: str) -> None:
            if "embeddings" not in results:  # the graph this run starts is the one measured
                results["embeddings"] = embedding_throughput(url, encoder, spec.model_id, batches=args.batches,
                                                             batch_size=args.batch_size, clients=args.clients,
                                                             api_key=None, rounds=args.rounds)

        results.setdefault("backends", {})["http"] = compare_over_http(
            args.profile, {size: sentences(size, seed=size) for size in args.http_sizes},
            {size: sentences(args.queries, seed=size + 99) for size in args.http_sizes}, encoder,
            postgres_url=args.postgres_url, on_embedded_graph=on_embedded_graph)
    if args.url:
        results["http"] = []
        for size in args.http_sizes:
            row = http_search(args.url, size, queries=args.queries, api_key=args.api_key)
            results["http"].append(row)
            print(f"HTTP /search over {size} documents ({row['index']}): p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms "
                  f"(ingest {row['ingest_docs_per_s']} docs/s)")
    save_results(args.out, "index", results, plot)
    return 0
