"""Training (issue 7): dataset preparation (:mod:`.prepare`) and the stage 1 / stage 2 trainers.

Submodules are imported on use, so ``import magicportrait.training`` stays light (no torch, no MediaPipe).
"""
