import logging

logger = logging.getLogger(__name__)


def reap_at_worker_start(sender, proc_name=None, **kwargs):
    from .services.operations import operations_reap

    try:
        reaped = operations_reap()
    except Exception:  # a worker must start even if the database is briefly away
        logger.exception("reaping at worker start failed")
        return
    if reaped:
        logger.info("worker %s marked operations %s interrupted", proc_name, reaped)
