"""Demonstration data: the DiffusionPolicy zarr replay buffer (replay_buffer), robomimic HDF5
read/write/import (robomimic_hdf5) and padded training windows (sequence_dataset)."""
