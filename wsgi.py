"""WSGI entry point for gunicorn (``gunicorn wsgi:app``) and ``flask --app wsgi``."""

import gc

from chatapp import create_app, warm_up

app = create_app()

# What the first answers would otherwise load while every other stream waits (half a second in a
# gevent worker): the tokenizer, the price table, the tone analyser's word list, the message templates.
warm_up(app)

# Everything loaded so far (the libraries, the app) lives as long as the process. Freezing it takes
# it out of the garbage collector's full passes, which otherwise walk all of it and pause every
# stream in a gevent worker for 100+ ms at a time (see bench/README.md).
gc.freeze()
