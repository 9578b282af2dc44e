print("hello from the sample folder")
