"""One module per capability: text -> model rows -> decode -> result. numpy only."""
