"""`kflow run --local`: a whole Flow on this machine, handlers called in-process.

`runner` drives the flow with one worker loop per queue, `view` draws its tree of node
states, `command` ties them to the command line (parse, Redis, run, exit code).
"""
