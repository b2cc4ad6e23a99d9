"""The small application the guides' examples store and migrate."""
