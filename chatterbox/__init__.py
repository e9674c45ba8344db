"""chatterbox-jobs: Chatterbox text to speech as a job system."""
