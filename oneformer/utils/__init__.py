"""Utilities: checkpoint loading with a clear report of what was (not) loaded, safe loading and atomic saving
(``checkpoint``); image reading with conversions and errors naming the file (``image_io``); whether a trace for
export is running (``tracing``); the device to run on, refused in one line when absent (``device``)."""
