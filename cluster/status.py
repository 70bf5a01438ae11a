"""What a Ray cluster has and what it runs: nodes, CPUs/GPUs (total and free), trials.

`cluster_status(address)` joins the cluster (without shipping code), takes one
snapshot and leaves again (unless the caller was already connected). Running Tune
trials are found among the cluster's live actors: a function trainable runs as an
actor of class `ImplicitFunc` (or named after the trainable). The actor list comes
from Ray's state API (`ray.util.state.list_actors`), which needs the dashboard
(`ray[default]`); without it the GCS actor table is read directly, and `trials_source`
says which one answered.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

from nuclei_search.cluster.runtime import connect, disconnect, parse_address

log = logging.getLogger(__name__)

# Actor class names (prefixes) that are Tune trials.
DEFAULT_TRIAL_CLASSES = ("ImplicitFunc", "train_unet")
HEAD_RESOURCE = "node:__internal_head__"


def _make_collector() -> Callable[[bool], dict]:
    """A function taking one raw snapshot of the cluster from inside a connected Ray process.

    It is built in a closure, free of project imports and module globals, so that
    cloudpickle ships it by value: in Ray Client mode it runs as a task on the
    cluster, where this project need not be installed.
    """

    def collect(use_state_api: bool, state_api_timeout: int = 5) -> dict:
        import ray

        raw: dict = {"nodes": ray.nodes(), "total": ray.cluster_resources(),
                     "available": ray.available_resources(), "available_per_node": None,
                     "actors": None, "actors_source": "unavailable", "notes": []}
        try:  # DeveloperAPI: free resources per live node, straight from the GCS
            from ray._private.state import available_resources_per_node

            raw["available_per_node"] = available_resources_per_node()
        except Exception as exc:  # noqa: BLE001 - a status view degrades, it does not fail
            raw["notes"].append(f"per-node free resources unavailable: {exc}")
        if use_state_api:
            try:
                from ray.util.state import list_actors

                # The connected cluster's own GCS address: "auto" could pick another cluster.
                gcs_address = getattr(ray.get_runtime_context(), "gcs_address", None)
                actors = list_actors(address=gcs_address, filters=[("state", "=", "ALIVE")],
                                     detail=True, limit=10_000,
                                     timeout=state_api_timeout, raise_on_missing_output=False)
                raw["actors"] = [
                    {"actor_id": a.actor_id, "class_name": a.class_name, "node_id": a.node_id,
                     "pid": a.pid, "name": a.name or "", "repr_name": getattr(a, "repr_name", "") or "",
                     "resources": dict(getattr(a, "required_resources", None) or {})}
                    for a in actors
                ]
                raw["actors_source"] = "state_api"
                return raw
            except Exception as exc:  # noqa: BLE001 - no dashboard / ray[default]: fall back to the GCS
                raw["notes"].append(f"state API unavailable ({type(exc).__name__}: no dashboard or no "
                                   "ray[default]); trials read from the GCS actor table")
        try:
            from ray._private.state import actors as gcs_actors

            table = gcs_actors(actor_state_name="ALIVE")
            raw["actors"] = [
                {"actor_id": a["ActorID"], "class_name": a["ActorClassName"],
                 "node_id": a["Address"]["NodeID"], "pid": a.get("Pid"), "name": a.get("Name") or "",
                 "repr_name": "", "resources": {}}
                for a in table.values()
            ]
            raw["actors_source"] = "gcs"
        except Exception as exc:  # noqa: BLE001
            raw["notes"].append(f"actor list unavailable: {exc}")
        return raw

    return collect


_PG_RESOURCE = re.compile(r"^(?P<name>.+?)_group_\d+_[0-9a-f]+$")


def _trial_resources(required: dict) -> dict:
    """Placement-group resource names ("CPU_group_0_<pg id>") back to plain ones ("CPU")."""
    plain: dict = {}
    for key, value in required.items():
        if "_group_" not in key:
            plain[key] = plain.get(key, 0) + value
            continue
        match = _PG_RESOURCE.match(key)  # the per-bundle form; "CPU_group_<pg id>" repeats it
        if match and match["name"] != "bundle":
            plain[match["name"]] = plain.get(match["name"], 0) + value
    return plain


def _num(resources: dict | None, key: str) -> float | None:
    if resources is None:
        return None
    return float(resources.get(key, 0.0))


def summarize(raw: dict, address: str, trial_classes: tuple[str, ...] = DEFAULT_TRIAL_CLASSES) -> dict:
    """Turn a raw snapshot into the status dict the CLI shows (pure; no Ray calls)."""
    free_per_node = raw.get("available_per_node")
    nodes = []
    for n in sorted(raw["nodes"], key=lambda n: (HEAD_RESOURCE not in n.get("Resources", {}), n["NodeID"])):
        total = n.get("Resources") or {}
        alive = bool(n.get("Alive"))
        free = None
        if alive and free_per_node is not None:
            free = free_per_node.get(n["NodeID"], {})
        custom = {k: v for k, v in total.items()
                  if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith("node:")
                  and not k.startswith("accelerator_type:")}
        nodes.append({
            "node_id": n["NodeID"],
            "address": n.get("NodeManagerAddress", ""),
            "hostname": n.get("NodeManagerHostname", ""),
            "alive": alive,
            "head": HEAD_RESOURCE in total,
            "cpus_total": _num(total, "CPU"),
            "cpus_free": _num(free, "CPU"),
            "gpus_total": _num(total, "GPU"),
            "gpus_free": _num(free, "GPU"),
            "custom_resources": custom,
        })
    trials = []
    for a in raw.get("actors") or []:
        if a["class_name"].startswith(tuple(trial_classes)):
            trials.append({**a, "actor": a["repr_name"] or a["class_name"],
                           "resources": _trial_resources(a.get("resources") or {})})
    trials.sort(key=lambda t: (t["node_id"] or "", t["actor_id"]))
    alive_nodes = [n for n in nodes if n["alive"]]
    totals = {
        "nodes_alive": len(alive_nodes),
        "nodes_dead": len(nodes) - len(alive_nodes),
        "cpus_total": _num(raw["total"], "CPU"),
        "cpus_free": _num(raw["available"], "CPU"),
        "gpus_total": _num(raw["total"], "GPU"),
        "gpus_free": _num(raw["available"], "GPU"),
        "running_trials": len(trials),
    }
    return {"address": address, "nodes": nodes, "totals": totals, "trials": trials,
            "trials_source": raw.get("actors_source", "unavailable"), "notes": list(raw.get("notes", []))}


def cluster_status(address: str | None, trial_classes: tuple[str, ...] = DEFAULT_TRIAL_CLASSES) -> dict:
    """Snapshot of the Ray cluster at `address` (auto | HOST:PORT | ray://HOST:10001).

    `None` means `auto`: a status view never starts a Ray of its own. Raises
    ClusterConnectionError (a NucleiSearchError) when no cluster answers. If this
    process is already connected to Ray, that connection is used and kept.
    """
    import ray

    target = parse_address(address or "auto") if not ray.is_initialized() else None
    if target is not None and target.kind == "local":
        target = parse_address("auto")
    we_connected = False
    if target is not None:
        connect(target, ship_code=False)
        we_connected = True
    try:
        version = ray.__version__
        if target is not None and target.kind == "client":
            # The client process has no GCS handle: take the snapshot in a task on the cluster.
            task = ray.remote(num_cpus=0)(_make_collector())
            raw = ray.get(task.remote(False), timeout=60)
        else:
            raw = _make_collector()(True)
    finally:
        if we_connected:
            disconnect()
    status = summarize(raw, target.text if target else "(current connection)", trial_classes)
    status["ray_version"] = version
    log.debug("cluster status: %d nodes, %d trials", len(status["nodes"]), len(status["trials"]))
    return status


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_table(status: dict) -> str:
    """The status as fixed-width text (the CLI prints it)."""
    lines = [f"Ray cluster at {status['address']} (Ray {status.get('ray_version', '?')})", ""]
    header = ("node", "address", "alive", "CPU free/total", "GPU free/total", "other resources")
    rows = []
    for n in status["nodes"]:
        node = n["node_id"][:12] + (" (head)" if n["head"] else "")
        other = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(n["custom_resources"].items()))
        rows.append((node, n["address"], "yes" if n["alive"] else "DEAD",
                     f"{_fmt(n['cpus_free'])}/{_fmt(n['cpus_total'])}",
                     f"{_fmt(n['gpus_free'])}/{_fmt(n['gpus_total'])}", other or "-"))
    t = status["totals"]
    total_row = (f"total: {t['nodes_alive']} alive" + (f", {t['nodes_dead']} dead" if t["nodes_dead"] else ""),
                 "", "", f"{_fmt(t['cpus_free'])}/{_fmt(t['cpus_total'])}",
                 f"{_fmt(t['gpus_free'])}/{_fmt(t['gpus_total'])}", "")
    lines += _table(header, rows + [total_row])
    lines.append("")
    if status["trials"]:
        lines.append(f"running trials: {len(status['trials'])} (from {status['trials_source']})")
        trows = [(tr["actor"], tr["actor_id"][:12], (tr["node_id"] or "-")[:12], _fmt(tr["pid"]),
                  ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(tr["resources"].items())) or "-")
                 for tr in status["trials"]]
        lines += _table(("trial actor", "actor id", "node", "pid", "resources"), trows)
    else:
        lines.append(f"running trials: none (from {status['trials_source']})")
    for note in status.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _table(header: tuple, rows: list[tuple]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return out
