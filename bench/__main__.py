from bench.run import main

# Load processes are spawned, and a spawned child imports the parent's main module again.
if __name__ == "__main__":
    main()
