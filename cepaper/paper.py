"""The paper's reported numbers, in one place (Littwin et al., NeurIPS 2020).

Notebooks and tables read the paper's values from here and show them beside ours; nothing the
paper printed is typed anywhere else. Each block names the figure, table or section it comes from.
"""
