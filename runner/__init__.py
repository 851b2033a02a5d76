"""medbench runner: everything needed to answer one model's questions and store the results.

Light modules (config, questions, prompts, plan, storage, records) import no torch and no
model SDKs, so the launcher can use them; heavy libraries are imported only inside the
backend that needs them (see ``runner.backends``).
"""

__version__ = "0.1.0"
