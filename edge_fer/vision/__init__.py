"""Finding, aligning, judging and classifying faces in pictures."""
