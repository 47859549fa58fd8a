"""The offline tool: training, data sets, distortions, confidence tables, simulation, reports.

Nothing on a camera node or a cloud worker imports from here (a test holds them to it): a Pi
installs the ``[device]`` extra only, without scikit-learn, scikit-image or matplotlib.
"""
