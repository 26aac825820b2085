"""Reading comprehension: CMRC/WebQA loading, the DGCNN reader, its training, export and evaluation."""
