# Runs before main.py. Nothing here may fail: the safety code starts in main.py, and a board that
# cannot boot keeps its valve closed (an NC valve's driver is off while GPIOs float at reset;
# the driver board has a pull-down).
import gc

gc.collect()
