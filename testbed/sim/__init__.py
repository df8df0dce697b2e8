"""The throttle in simulated time: the real `transforms.control` classes against a model of the service."""
