"""Product rules beside ``bot.routing``: who may do what, what a new task looks like."""
