"""Kubernetes: Job names (``names``), manifests as a pure function of a plan (``render``) and the
one module that talks to the API server (``client``)."""
