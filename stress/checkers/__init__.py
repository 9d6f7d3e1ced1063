"""stress.checkers: pure checkers that judge a recorded history; they import nothing of mvcc."""
