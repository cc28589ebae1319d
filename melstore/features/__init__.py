"""Feature computation, the lowest layer: audio input, feature kinds, parameters, presets.

Nothing here knows about stores, the workflow or figures.
"""
