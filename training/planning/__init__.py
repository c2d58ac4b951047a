"""Runs planned for hardware that is not at hand (`shardline plan`): the one table of devices and their peaks,
planning targets, memory and FLOPs of the compiled step, MFU, and the one home of HLO reading (hlo/).

May import core/, models/, partitioning/, kernels/ (the FLOPs kernels declare), and the rooms state/ and
transfer/.
"""
