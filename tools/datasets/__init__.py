"""Reading the research datasets (MovieLens ratings, ReDial dialogues) and the splits shared by training and evaluation."""
