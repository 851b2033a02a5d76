"""Kubernetes: Job names (``names``), each Job's size from its model's weights (``weights`` finds
them, ``sizing`` does the arithmetic), manifests as a pure function of a plan and its sizes
(``render``, ``placement``), the checks before a submit (``preflight``) and the one module that
talks to the API server (``client``)."""
