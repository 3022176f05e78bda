"""A driver's endpoints: wallet, vehicles, statements, IoT cards, the driver page, sign-in."""
