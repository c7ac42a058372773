"""Release and deployment: versions in GTO, the Kubernetes overlays, smoke tests and lineage.

The workflows (release.yml, deploy.yml, promote.yml) call these through `gitml` subcommands;
everything they decide is read from git: the tags GTO writes and the overlays under deploy/k8s.
"""
