"""The store: its format and writer, the reader, exports, the PyTorch dataset, and the
extractor that computes a store's features for new audio (inference) and writes them.

Reading a store needs only numpy, h5py and pandas; nothing here imports the
pipeline or the report. The extractor also needs soundfile, soxr and scipy,
and the reader never imports it.
"""
