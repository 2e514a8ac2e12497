"""Measuring MAE: the lessons' experiments and the benchmarks.

inpainting   lesson 02   what no learning can do: filling removed patches from their neighbours
flops        lesson 08   FLOP counts from the architecture
sweep        lessons 08, 10   ablations (Figure 5, Table 1), longer pretraining (Figure 7), bigger encoders
                           against scratch (Figure 8), each as one resumable command
table2       lesson 08   the asymmetric encoder's speed-up (Table 2), timed
timing       lessons 03, 08   fair timing: contenders take turns, median ratio and its spread
throughput   lesson 09   model-only images/s, MFU, against the transformers peer
peer         lesson 09   transformers' ViTMAEForPreTraining, built to match ours
e2e          lesson 09   can the CPU or GPU data pipeline feed the model?
bench        the ``bench`` command: one of the three benchmarks
scaling      lesson 09   the batch arithmetic of the recipe at scale, and how long a run takes
transfer     lesson 10   the paper's scaling and transfer results, and the course's miniatures, as figures
"""
