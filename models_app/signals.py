import logging

logger = logging.getLogger(__name__)


def worker_started(sender, proc_name=None, **kwargs):
    """In a new qcluster worker process: start its heartbeat; reap the dead workers' work."""
    from .models import ProcessRole
    from .services.heartbeats import heartbeat_keeper_start
    from .services.operations import operations_reap

    try:
        heartbeat_keeper_start(role=ProcessRole.WORKER)
        reaped = operations_reap()
    except Exception:  # a worker must start even if the database is briefly away
        logger.exception("heartbeat or reaping at worker start failed")
        return
    if reaped:
        logger.info("worker %s marked operations %s interrupted", proc_name, reaped)
