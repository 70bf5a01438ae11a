"""Running the search on Ray clusters: connect and ship code, cluster status, launcher configs.

`cluster.runtime.connect` is what the search driver calls; `cluster.status` backs
`nuclei-search cluster status`; `cluster.launcher` checks the launcher YAMLs beside this
file. The deployment files (aws-gpu.yaml, gcp-gpu.yaml, kuberay.yaml, kuberay-job.yaml,
Dockerfile) live here too; the guide is docs/cluster.md. Nothing here
imports Ray at import time.
"""
