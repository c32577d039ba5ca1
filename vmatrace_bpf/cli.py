import click

@click.group()
def main():
    """vmabpf"""

@main.command()
def doctor():
    import os
    print(os.uname().release)
