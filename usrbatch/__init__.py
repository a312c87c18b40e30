"""usrbatch: a job-scheduler-native batch tool for USR sequence datasets."""

__version__ = "0.1.0"
