"""Judging an encoder the paper's three ways: linear probing, fine-tuning, partial fine-tuning.

protocols      lesson 07   the probe head, layer-wise lr decay, partial freezing
lars           lesson 07   the LARS optimizer of linear probing
metrics        top-1 / top-5 accuracy over one process or many
classify       the classifier job on the training loop, given a recipe
finetune       fine-tuning (end to end or partial) and training from scratch
linprobe       linear probing, with cached frozen features
all_protocols  all of them for one checkpoint, with baselines: ``python -m mae_course evaluate``
inside         lesson 07   looking inside an encoder: cls attention, PCA colours of patches, nearest neighbours
"""
