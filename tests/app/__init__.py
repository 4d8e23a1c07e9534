"""The Gradio app, through its real API, in processes and in a browser."""
