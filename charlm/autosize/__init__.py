"""`charlm train --corpus X --budget 10m`: a config sized for the corpus, the budget and this machine.

    corpus ─► CorpusStats (train chars, val chars, vocabulary) ─┐
    device, precision ─► Calibration (measured chars/s, cached) ┼─► rule.plan ─► Plan ─► Config (+ --set on top)

auto.py makes the config (`auto_config`); rule.py holds the rule and the measurements it comes from;
calibrate.py times candidate shapes on this device. The config is a plain Config: the run folder keeps
it like any other (so --resume, `charlm info` and the Python API see it).
"""
