"""One error hierarchy for medbench, rendered once at the CLI edge.

    MedbenchError                 exit 1 unless a subclass says otherwise
    ├── InputError                exit 2: bad config, questions or arguments; nothing written
    │   ├── ConfigError
    │   └── QuestionsError
    ├── BackendUnavailable        a backend's library or credentials are missing (exit 2)
    ├── BackendFatal              the service refused us for good (bad key, quota): stops a model
    ├── StorageError              object storage or the local folder failed
    ├── ClusterError              the Kubernetes API failed or refused
    └── RunFailed                 one or more models failed
"""

from __future__ import annotations


class MedbenchError(Exception):
    exit_code = 1


class InputError(MedbenchError):
    exit_code = 2


class ConfigError(InputError):
    pass


class QuestionsError(InputError):
    pass


class BackendUnavailable(MedbenchError):
    exit_code = 2


class BackendFatal(MedbenchError):
    """The service will not answer this model at all (rejected key, exhausted quota)."""


class StorageError(MedbenchError):
    pass


class StorageNotFound(StorageError):
    pass


class ClusterError(MedbenchError):
    pass


class RunFailed(MedbenchError):
    pass
