"""``python -m serve bench cpu-share``: where the CPU goes while the graph extracts.

The ingress shares its event loop with every streaming response, so page parsing must
not run there. This sends ``/v1/extract/batch`` requests of HTML postings (``fast`` mode
by default: all parsing, no LLM; each posting wrapped in a job board's site chrome up to
``--page-kib``) to a running graph and reads every serving process's
CPU time (user + system, from psutil) before and after. The result is the CPU seconds
per deployment, and the ingress's share of all the serving processes' time.

Serving processes are the Serve replicas, the HTTP proxy, the controller and the vLLM
engines (and vLLM's own API server, when ``bench overhead`` runs it alone). Ray's own daemons (raylet, GCS, dashboard) are counted apart: they run
whatever the application does.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Any, Optional

from serve.bench.extract import load_corpus
from serve.bench.meta import loopback_client, save_results

_REPLICA = re.compile(r"ServeReplica:[^:\s]+:([A-Za-z0-9_-]+)")
_RAY_DAEMONS = re.compile(r"raylet|gcs_server|dashboard|log_monitor|monitor\.py|runtime_?env|Agent\b", re.I)


def process_group(name: str, cmdline: str) -> Optional[str]:
    """The part of the graph a process belongs to, from its title; None if not Ray's.

    Ray titles its workers (``ray::ServeReplica:<app>:<Deployment>``,
    ``ray::ProxyActor``); vLLM titles its engine core ``VLLM::EngineCore``.
    """
    title = f"{name} {cmdline}"
    replica = _REPLICA.search(title)
    if replica:
        return replica.group(1)
    if "EngineCore" in title or "VLLM::" in title:
        return "vLLM engines"
    if "vllm.entrypoints.openai.api_server" in title:
        return "vLLM API server"
    if "ProxyActor" in title:
        return "HTTP proxy"
    if "ServeController" in title:
        return "Serve controller"
    if "ray" in title.lower() and _RAY_DAEMONS.search(title):
        return "Ray daemons"
    if title.lstrip().startswith("ray::"):
        return "idle Ray workers"
    return None


def cpu_census() -> dict[int, tuple[str, float]]:
    """Every Ray or vLLM process on this machine: its group and CPU seconds so far."""
    import psutil

    census: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        try:
            group = process_group(proc.info["name"] or "", " ".join(proc.info["cmdline"] or []))
            if group is not None:
                times = proc.info["cpu_times"]
                census[proc.info["pid"]] = (group, times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError):
            continue
    return census


def cpu_by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each group spent between two censuses (a process born in between
    counts from zero; one that died in between is lost, and the caller says so)."""
    spent: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        spent[group] = spent.get(group, 0.0) + seconds - before.get(pid, (group, 0.0))[1]
    return {group: round(value, 3) for group, value in sorted(spent.items(), key=lambda kv: -kv[1])}


def with_site_chrome(page: str, kib: float) -> str:
    """``page`` inside the site chrome a job board wraps around a posting (navigation,
    job-alert forms, related jobs, footer links, inline scripts) until it is ``kib``
    KiB (pages already near that size are left as they are). The corpus pages are the postings alone (under 1.2 KiB); real pages are tens of
    KiB, and parsing cost grows with the page while the per-request cost does not."""
    target = int(kib * 1024) - len(page)
    if target <= 0:
        return page
    header = "".join(f'<li><a href="/jobs/category/{i}">Category {i} jobs</a></li>' for i in range(40))
    related = "".join(
        f'<article class="related"><h3><a href="/jobs/{i}">Related role {i}</a></h3>'
        f"<p>Another team is hiring for a position like this one. Apply today and join us.</p></article>"
        for i in range(400)
    )
    script = "<script>window.__STATE__ = {\"tracking\": true, \"experiments\": [1, 2, 3]};</script>"
    top = f'<nav class="site"><ul>{header}</ul></nav>{script}'
    if target < len(top):
        return page
    bottom = f'<aside class="related-jobs">{related}'[: max(0, target - len(top) - 8)]
    bottom = bottom[: bottom.rfind("</article>") + len("</article>")] + "</aside>" if "</article>" in bottom else ""
    if "<body>" not in page or "</body>" not in page:
        return top + page + bottom
    return page.replace("<body>", "<body>" + top, 1).replace("</body>", bottom + "</body>", 1)


def html_postings(count: int, kib: float) -> list[str]:
    """``count`` HTML postings from the labelled corpus (cycled), each in ``kib`` KiB of
    site chrome."""
    pages = [with_site_chrome(doc["document"], kib) for doc in load_corpus() if doc["kind"] != "text"]
    if not pages:
        raise SystemExit("the extraction corpus has no HTML postings")
    return list(itertools.islice(itertools.cycle(pages), count))


def measure(url: str, documents: list[str], *, mode: str, rounds: int, api_key: Optional[str], timeout_s: float) -> dict[str, Any]:
    """Send ``rounds`` batches and read the CPU census around them."""
    body = {"documents": documents, "mode": mode}
    with loopback_client(url, api_key=api_key, timeout_s=timeout_s, suite="cpu-share") as client:
        client.post("/v1/extract/batch", json={"documents": documents[:2], "mode": mode}).raise_for_status()  # warm
        before, started = cpu_census(), time.perf_counter()
        succeeded = 0
        for _ in range(rounds):
            reply = client.post("/v1/extract/batch", json=body)
            reply.raise_for_status()
            succeeded += reply.json()["succeeded"]
        wall, after = time.perf_counter() - started, cpu_census()
    groups = cpu_by_group(before, after)
    serving = {g: s for g, s in groups.items() if g not in ("Ray daemons", "idle Ray workers")}
    total = sum(serving.values())
    ingress = serving.get("Ingress", 0.0)
    return {
        "documents": len(documents) * rounds, "succeeded": succeeded, "wall_s": round(wall, 2),
        "docs_per_s": round(len(documents) * rounds / wall, 1) if wall else None,
        "cpu_s_by_group": groups, "serving_cpu_s": round(total, 3),
        "ingress_share": round(ingress / total, 3) if total else None,
        "processes_gone": sorted(set(before) - set(after)),
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = results["cpu_s_by_group"]
    names = list(groups)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    colors = ["tab:red" if n == "Ingress" else "tab:gray" if n in ("Ray daemons", "idle Ray workers") else "tab:blue"
              for n in names]
    ax.barh(names, [groups[n] for n in names], color=colors)
    ax.invert_yaxis()
    ax.set(xlabel="CPU seconds during the batches",
           title=f"{results['documents']} HTML postings, {results['mode']} mode: ingress "
                 f"{100 * (results['ingress_share'] or 0):.0f}% of the serving processes' CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    """Entry point for ``python -m serve bench cpu-share``."""
    documents = html_postings(args.documents, args.page_kib)
    results = {"url": args.url, "mode": args.mode, "batch_documents": args.documents, "rounds": args.rounds,
               "document_kib": round(sum(len(d) for d in documents) / len(documents) / 1024, 1),
               **measure(args.url, documents, mode=args.mode, rounds=args.rounds, api_key=args.api_key, timeout_s=args.timeout)}
    for group, seconds in results["cpu_s_by_group"].items():
        print(f"{group:>22}: {seconds:8.2f} CPU s")
    print(f"ingress share of the serving processes' CPU: {results['ingress_share']} "
          f"({results['documents']} documents, {results['docs_per_s']} documents/s)")
    save_results(args.out, "cpu_share", results, plot)
    return 0
