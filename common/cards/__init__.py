"""Model cards: a version's held-out evaluation, its plots and the HTML page showing them.

`publish.publish_card` evaluates and plots (scikit-learn, NumPy, matplotlib: worker side)
and writes `<type>/<version>/card/` beside the artifact. `store.read_card` and `page`
need none of those libraries, so the API reads and renders cards without them: nothing
here imports `evaluate` or `plots` at module level.
"""
