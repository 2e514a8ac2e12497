"""Lesson 06: seeing what an MAE sees.

reconstruction   predictions back to pictures: paste the visible patches, undo normalized pixels
explorer         the masking explorer: a pure function, and an ipywidgets widget around it
hub              the released checkpoints of the paper's authors
"""
