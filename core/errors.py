"""Exceptions that core raises on purpose, so callers (CLI, Ray trials) can tell them apart."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite: training stops here instead of producing garbage."""

    def __init__(self, iteration: int, loss_name: str, value: float):
        self.iteration = iteration
        self.loss_name = loss_name
        self.value = value
        super().__init__(f"training diverged at iteration {iteration}: {loss_name} = {value}")

    def __reduce__(self):
        """Picklable with its fields, so it crosses process boundaries (Ray workers) intact."""
        return (type(self), (self.iteration, self.loss_name, self.value))
