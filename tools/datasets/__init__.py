"""The research datasets (MovieLens ratings, ReDial dialogues) and the splits that training and evaluation share."""
