"""Outbox jobs: their kinds (``kinds``), the runner that finds a job's handler
(``runner``), and the handlers: chat threads (``chat``), relays (``relay``), answers to
Facebook (``facebook``) and what happens when a job fails for good (``failures``)."""
