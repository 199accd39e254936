"""Example models shipped with modelc: our own small networks, data generator and training scripts."""
