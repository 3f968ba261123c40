"""Built-in tasks: the offline data each unlearning scenario needs."""
