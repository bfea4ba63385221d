"""Building weights, apart from the runtime code that uses them: training loops and converters."""
