"""The store: its format and writer, the reader, exports and the PyTorch dataset.

Reading a store needs only numpy, h5py and pandas; nothing here imports the
pipeline or the report.
"""
