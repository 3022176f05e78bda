"""The one error of the local stack: a service that did not start or stop."""


class StackError(RuntimeError):
    """A service did not start or stop; the message ends with its log's tail."""
