"""The fast layer: speed-ups applied by the trainer and the decoders, outside the paper path.

`qkv.model` reads like the paper. Everything here makes the same computation cheaper on real
machines; each module says what it speeds up, the measured gain on qkv's own workloads, the A/B
command that reproduces it, and names the test that proves it equal to the paper path.
"""
