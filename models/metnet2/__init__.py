"""MetNet-2: probabilistic precipitation nowcasting with dilated convolutions and lead-time conditioning."""
