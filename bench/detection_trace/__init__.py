"""The labelled trace of bench/detection and its scoring.

clock: the calendar (Asia/Almaty office hours, weekends, holidays);
world: recipient domains, names and each system's correspondents;
systems: the connected systems (sizes, habits) and their config.toml;
delivery: what the next hops answer, per recipient and attempt;
scenario: which system has which hard case or incident, and when;
traffic: a system's ordinary day, hard cases included;
incidents: the labelled abnormal traffic;
sink: events written in time order;
trace: the event log, the config and the labels;
stream: one `mailgw replay` with an operator lifting each suspension;
passes: the same in passes, should replay not answer in step;
score and report: decisions against labels, tables and JSON.
"""
