"""`nuclei-search cluster status|validate|up|down`: look at and launch Ray clusters."""

from __future__ import annotations

import argparse
import json

from nuclei_search.cluster.launcher import run_launcher, validate_launcher_config
from nuclei_search.cluster.status import cluster_status, format_table


def register(sub) -> None:
    p = sub.add_parser(
        "cluster",
        help="Ray cluster: status (nodes, GPUs, running trials), validate/up/down a launcher YAML",
        description="Look at a running Ray cluster, or check and launch a cluster-launcher config "
                    "(cluster/aws-gpu.yaml, cluster/gcp-gpu.yaml).",
    )
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION")
    csub.required = True

    s = csub.add_parser("status", help="nodes, CPUs/GPUs total and free, running trials",
                        description="Join the Ray cluster briefly (no code shipped) and show its nodes, "
                                    "total and free CPUs/GPUs and the Tune trials running where.")
    s.add_argument("--address", default="auto", metavar="ADDR",
                   help="auto (default: $RAY_ADDRESS or the last `ray start` here) | HOST:PORT | ray://HOST:10001")
    s.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    s.set_defaults(func=status_cmd)

    v = csub.add_parser("validate", help="check a cluster-launcher YAML against Ray's schema (offline)",
                        description="Ray's JSON schema, then Ray's own defaults-merging and checks, as `ray up` "
                                    "does before it contacts the cloud. Needs no cloud account.")
    v.add_argument("config", metavar="CONFIG", help="launcher YAML, e.g. cluster/aws-gpu.yaml")
    v.set_defaults(func=validate_cmd)

    for action, what in (("up", "start or update"), ("down", "tear down")):
        a = csub.add_parser(action, help=f"{what} the cluster of a launcher YAML (`ray {action} -y`)",
                            description=f"Validate CONFIG offline, then run `ray {action} -y CONFIG` "
                                        "(needs ray[default] and cloud credentials).")
        a.add_argument("config", metavar="CONFIG", help="launcher YAML, e.g. cluster/aws-gpu.yaml")
        a.set_defaults(func=launcher_cmd, action=action)


def status_cmd(args: argparse.Namespace) -> int:
    status = cluster_status(args.address)
    if args.format == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_table(status))
    return 0


def validate_cmd(args: argparse.Namespace) -> int:
    prepared = validate_launcher_config(args.config)
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    print(f"{args.config}: valid ({prepared['provider']['type']}, cluster {prepared['cluster_name']!r})")
    for name, node_type in types.items():
        res = ", ".join(f"{k}={v:g}" for k, v in sorted(node_type.get("resources", {}).items()))
        role = "head" if name == head else f"workers {node_type.get('min_workers', 0)}..{node_type.get('max_workers')}"
        print(f"  {name}: {role}; {res or 'resources auto-detected'}")
    print("not checked offline: credentials, images, quotas, networks (`ray up` does that)")
    return 0


def launcher_cmd(args: argparse.Namespace) -> int:
    return run_launcher(args.action, args.config)
