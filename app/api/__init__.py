"""The JSON API's shared pieces: one body reader (:mod:`app.api.reader`) and the request
body models of every JSON endpoint (:mod:`app.api.bodies`)."""
