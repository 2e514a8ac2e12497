"""Training: the recipe, the step, the one loop, run folders, torch.distributed and pretraining.

recipe       lesson 05   the lr rule and schedule, AdamW's groups, the plain training step
step         lesson 09   the fast step: mixed precision, fused AdamW, compile, DDP
engine       lessons 05, 07   the one epoch loop of every job
run          lesson 05   the run folder: lock, log, checkpoints with RNG state, Ctrl-C
stages       lessons 07-08   several jobs in a row, resumable (evaluate, sweep)
distributed  lesson 09   one process or many
pretrain     lesson 05   the pretraining job: ``python -m mae_course pretrain``
"""
